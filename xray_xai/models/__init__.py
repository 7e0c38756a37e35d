"""xray_xai.models."""
