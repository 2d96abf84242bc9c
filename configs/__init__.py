"""Named experiment configs: pass one with --config=configs/<name>.py."""
