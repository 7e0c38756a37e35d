"""xray_xai.artifacts."""
