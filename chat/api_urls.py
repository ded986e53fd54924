"""`/api/`: the JSON + SSE API for non-browser clients (views in `chat/api.py`)."""

from django.urls import path

from chat import api

app_name = "api"

urlpatterns = [
    path("agents", api.agent_list, name="agents"),
    path("conversations", api.conversations, name="conversations"),
    path("conversations/<uuid:public_id>", api.conversation_detail, name="conversation"),
    path("conversations/<uuid:public_id>/messages", api.message_send, name="messages"),
    path("conversations/<uuid:public_id>/events", api.run_events, name="events"),
    path("conversations/<uuid:public_id>/cancel", api.run_cancel, name="cancel"),
    path("conversations/<uuid:public_id>/approvals/<str:call_id>", api.approval_decide, name="approval"),
    # Anything else under /api/ answers in JSON too.
    path("<path:rest>", api.not_found),
    path("", api.not_found),
]
