"""termctl's commands, one module per command group.

Each module holds an argparse factory `argparse_<group>(sub)` and a handler
`do_<group>(state, args)`; `host_tools.cli.COMMANDS` is the table that names
them. Handlers parse nothing and decide nothing: they call the library
(`host_tools.link`, `transfer`, `centre`, `pos`, ...) and print its answer.
"""
