"""``python -m sparsecnn``: the command line (the ``sparsecnn`` script) run by the interpreter
itself, as the parallel reproduce run starts its shard processes."""

from .cli import main

if __name__ == "__main__":
    main()
