"""Serving: the exported SavedModel that takes raw strings, and predictions from it."""
