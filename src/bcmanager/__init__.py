"""bcmanager: basecall a live nanopore run across GPU engines, every read exactly once."""

__version__ = "0.1.0"
