"""Sub-commands of ``sparsecnn`` (one module each, exposing ``command``)."""
