"""`python -m govern` runs the same CLI as the `govern` console script."""

from govern.cli import main

if __name__ == "__main__":
    main()
