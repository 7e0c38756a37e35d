"""xray_xai.explain."""
