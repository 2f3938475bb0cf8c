"""The error type every layer raises to produce Nomad's plain-text error responses."""

from __future__ import annotations


class ApiError(Exception):
    """An HTTP error with Nomad's status code and plain-text body."""

    def __init__(self, status: int, text: str) -> None:
        super().__init__(text)
        self.status = status
        self.text = text
