"""`python -m scintiflow.cli`."""

from scintiflow.cli import main

if __name__ == "__main__":
    main()
