from django.contrib.auth.decorators import login_required
from django.shortcuts import render

from agents_app.models import Ticket


@login_required
def ticket_list(request):
    """The support tickets the support agent opened for this user."""
    tickets = Ticket.objects.for_user(request.user).select_related("conversation")
    return render(request, "agents_app/ticket_list.html", {"tickets": tickets})
