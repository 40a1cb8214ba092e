"""The web app's tabs: each module holds one tab's layout and handlers; `app.py` builds them and wires them."""
