"""Apps: platform-wide names, releases, and the URL each app answers on."""
