from django.urls import path

from chat import views, views_usage

app_name = "chat"

urlpatterns = [
    path("", views.conversation_list, name="conversation_list"),
    path("c/new/", views.conversation_create, name="conversation_create"),
    path("c/<uuid:public_id>/", views.conversation_detail, name="conversation_detail"),
    path("c/<uuid:public_id>/delete/", views.conversation_delete, name="conversation_delete"),
    path("usage/", views_usage.usage_page, name="usage"),
]
