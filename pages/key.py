"""One key's page (`/key?key=groq:2`): opened from the Status table's "Open" link; logic in `dashboard.key_page`."""

from dashboard import shell
from dashboard.client import get_client
from dashboard.key_page import key_page

shell.ensure()
key_page(get_client())
