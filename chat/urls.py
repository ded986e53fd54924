from django.urls import path

from chat import views

app_name = "chat"

urlpatterns = [
    path("", views.conversation_list, name="conversation_list"),
    path("c/new/", views.conversation_create, name="conversation_create"),
    path("c/<uuid:public_id>/", views.conversation_detail, name="conversation_detail"),
    path("c/<uuid:public_id>/delete/", views.conversation_delete, name="conversation_delete"),
    path("c/<uuid:public_id>/rename/", views.conversation_rename, name="conversation_rename"),
    path("c/<uuid:public_id>/export.<str:fmt>", views.conversation_export, name="conversation_export"),
    path("c/more/", views.sidebar_page, name="sidebar_page"),
    path("search/", views.search, name="search"),
    path("m/<uuid:public_id>/feedback/", views.message_feedback, name="message_feedback"),
]
