"""The ceiling for the ingress benchmark: a functions-framework handler that does nothing."""

import functions_framework
from flask import Request


@functions_framework.http
def bare(request: Request) -> tuple[str, int]:
    if request.path == "/healthz":
        return "ok", 200
    return "", 202
