"""``streamlit run`` as ``python -m streamlit`` runs it, with its one call out of the machine off.

Streamlit asks ``checkip.amazonaws.com`` for the machine's public address to print an "External
URL" on a wildcard address, and again, offline on every try, for each WebSocket whose Origin is
not the server's own (a proxy on another port, a stray page): an offline app that calls out, through
a hospital's proxy where one is set. The address it would cache is set to none first.
"""

from __future__ import annotations

import streamlit.net_util
from streamlit.web.cli import main

streamlit.net_util._external_ip = ""  # no public switch; tests/test_app_browser.py checks it holds

if __name__ == "__main__":
    main(prog_name="streamlit")
