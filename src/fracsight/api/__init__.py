"""The REST API (FastAPI): ``create_app()`` and its settings. Needs the ``serve`` extra.

>>> from fracsight.api import ApiSettings, create_app    # doctest: +SKIP
>>> app = create_app(ApiSettings(max_files=4))            # doctest: +SKIP

Endpoints, error codes and limits are described in docs/api.md.
"""

from fracsight.api.app import create_app
from fracsight.api.settings import ApiSettings

__all__ = ["ApiSettings", "create_app"]
