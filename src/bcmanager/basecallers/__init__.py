"""Basecaller backends; `make_basecaller` picks one by name (see `abc.Basecaller`)."""
