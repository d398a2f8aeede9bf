"""Provider clients: one small module per backend behind the interface in base.py."""
