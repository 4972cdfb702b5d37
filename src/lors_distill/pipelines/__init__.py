"""Kedro pipelines: thin adapters between the catalog and ``lors_distill.core``."""
