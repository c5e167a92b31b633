"""Prekeys: uploads, bundles (claiming one-time keys), stock warnings."""
