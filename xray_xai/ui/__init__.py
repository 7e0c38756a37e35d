"""xray_xai.ui."""
