from django.contrib import admin
from django.urls import include, path

urlpatterns = [
    path("admin/", admin.site.urls),
    path("accounts/", include("allauth.urls")),
    path("tickets/", include("agents_app.urls")),
    path("api-tokens/", include("accounts.urls")),
    path("api/", include("chat.api_urls")),
    path("", include("chat.urls")),
]
