"""The web UI the api serves: a static shell (`/`, `/ui/<asset>`) that calls the JSON API.

The page asks for an API token, keeps it in the browser (sessionStorage, or
localStorage when the user ticks "remember"), and talks to `/v1/...` with
`Authorization: Bearer` like any other client. Serving the shell needs no token: it
holds no data. Plain JavaScript, no framework, no build step, nothing from outside.

Not here: any API logic or authorisation (routes/ and routing.py own those).
"""

from services.api.ui.shell import ASSETS, setup_ui

__all__ = ["ASSETS", "setup_ui"]
