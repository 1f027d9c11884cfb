"""Pair kinds: plugin code that turns a card into strong, weak and final denoisers."""
