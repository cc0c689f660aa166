"""Entry point for `pulumi up`: the program itself lives in program.py so tests can call it."""

from program import main

main()
