"""Data pipeline: load Q&A sources, clean, deduplicate, split without leakage, write a data folder.

The trainer and evaluator read prepared folders through `load_split` and `read_manifest`; the
stage itself is `medchat.data.prepare.prepare` (not re-exported here, so that
`from medchat.data import prepare` keeps meaning the module).
"""

from medchat.data.prepare import PrepareOptions, load_split, read_manifest

__all__ = ["PrepareOptions", "load_split", "read_manifest"]
