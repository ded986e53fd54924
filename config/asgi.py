import os

from django.core.asgi import get_asgi_application

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "config.settings")
# Initialise Django (and the app registry) before importing anything that touches models.
django_asgi_app = get_asgi_application()

from channels.auth import AuthMiddlewareStack  # noqa: E402
from channels.routing import ProtocolTypeRouter, URLRouter  # noqa: E402

from accounts.asgi import BearerTokenAuthMiddleware  # noqa: E402
from chat import engine  # noqa: E402
from chat.routing import websocket_urlpatterns  # noqa: E402
from config.security import CsrfOriginValidator  # noqa: E402

# A deploy or scale-down (SIGTERM) lets runs in flight finish before the process exits.
engine.install_shutdown_hook()

application = ProtocolTypeRouter(
    {
        "http": django_asgi_app,
        # Browsers: an Origin that Django's CSRF check would accept (config/security.py), then
        # the session. Non-browser clients: `Authorization: Bearer` with an API token, no Origin
        # needed (accounts/asgi.py says why that is safe).
        "websocket": BearerTokenAuthMiddleware(
            URLRouter(websocket_urlpatterns),
            otherwise=CsrfOriginValidator(AuthMiddlewareStack(URLRouter(websocket_urlpatterns))),
        ),
    }
)
