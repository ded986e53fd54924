from django.urls import path

from agents_app import views

app_name = "tickets"

urlpatterns = [
    path("", views.ticket_list, name="list"),
]
