"""openwit package."""
