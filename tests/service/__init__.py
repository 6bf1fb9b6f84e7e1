"""Service tests: uploads, imaging, HTTP end to end."""
