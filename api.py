"""Where gunicorn finds the service: `gunicorn --config gunicorn.conf.py api:app`.

The application itself is built by ad_purchase.serving.app.create_app; this module reads the
settings, configures logging and builds the one app the server runs.  Tests build their own
apps with create_app and never import this module.
"""
from ad_purchase.serving.app import configure_logging, create_app
from ad_purchase.serving.settings import Settings

settings = Settings.from_env()
configure_logging(settings)
app = create_app(settings=settings)
