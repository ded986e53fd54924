"""`/api/`: the JSON + SSE API for non-browser clients (views in `chat/api.py`)."""

from django.urls import path, re_path

from chat import api

app_name = "api"

urlpatterns = [
    path("schema", api.schema, name="schema"),
    path("agents", api.agent_list, name="agents"),
    path("models", api.model_list, name="models"),
    path("conversations", api.conversations, name="conversations"),
    path("conversations/<uuid:public_id>", api.conversation_detail, name="conversation"),
    path("conversations/<uuid:public_id>/messages", api.message_send, name="messages"),
    path("conversations/<uuid:public_id>/events", api.run_events, name="events"),
    path("conversations/<uuid:public_id>/cancel", api.run_cancel, name="cancel"),
    path("conversations/<uuid:public_id>/export", api.conversation_export, name="export"),
    path("conversations/<uuid:public_id>/approvals/<str:call_id>", api.approval_decide, name="approval"),
    path("messages/<uuid:message_id>/feedback", api.message_feedback, name="feedback"),
    # Anything else under /api/ answers in JSON too (any character: `<path:>` stops at a newline).
    re_path(r"[\s\S]*", api.not_found),
]
