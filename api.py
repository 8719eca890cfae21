"""Where gunicorn finds the service: `gunicorn --config gunicorn.conf.py api:app`.

The application itself is built by ad_purchase.serving.app.create_app; this module only
configures logging and builds the one app the server runs.  Tests build their own apps with
create_app and never import this module.
"""
from ad_purchase.serving.app import configure_logging, create_app

configure_logging()
app = create_app()
