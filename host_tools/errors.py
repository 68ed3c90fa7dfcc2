"""The host tools' one error type: main() prints it as `termctl: message`, exit 1."""


class ToolError(Exception):
    pass
