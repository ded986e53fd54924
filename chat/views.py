from django.conf import settings
from django.contrib.auth.decorators import login_required
from django.shortcuts import get_object_or_404, redirect, render
from django.views.decorators.http import require_POST

from agents_app import providers
from agents_app.registry import all_specs
from chat import services
from chat.forms import NewConversationForm
from chat.models import Conversation, Run
from chat.usage import usage_records, usage_totals


def _provider_problem() -> str:
    try:
        providers.provider_name()
    except providers.ProviderNotConfigured as exc:
        return str(exc)
    return ""


@login_required
def conversation_list(request):
    conversations = Conversation.objects.for_user(request.user).with_usage()
    return render(
        request,
        "chat/conversation_list.html",
        {
            "conversations": conversations,
            "form": NewConversationForm(),
            "specs": all_specs(),
            "provider_problem": _provider_problem(),
        },
    )


@login_required
@require_POST
def conversation_create(request):
    form = NewConversationForm(request.POST)
    if not form.is_valid():
        return render(
            request,
            "chat/conversation_list.html",
            {"conversations": Conversation.objects.for_user(request.user), "form": form, "specs": all_specs()},
            status=400,
        )
    conversation = services.conversation_create(owner=request.user, agent_key=form.cleaned_data["agent"])
    return redirect("chat:conversation_detail", public_id=conversation.public_id)


@login_required
def conversation_detail(request, public_id):
    conversation = get_object_or_404(Conversation.objects.for_user(request.user), public_id=public_id)
    problem = _provider_problem()
    if problem:
        return render(request, "chat/provider_missing.html", {"problem": problem, "conversation": conversation}, status=503)
    messages = conversation.messages.all()
    return render(
        request,
        "chat/conversation_detail.html",
        {
            "conversation": conversation,
            "messages": messages,
            "active_run": Run.objects.active().filter(conversation=conversation).first(),
            "totals": usage_totals(usage_records(user=request.user).filter(conversation=conversation)),
            "spec": next((s for s in all_specs() if s.key == conversation.agent_key), None),
            "max_chars": settings.CHAT_MAX_MESSAGE_CHARS,
        },
    )


@login_required
@require_POST
def conversation_delete(request, public_id):
    conversation = get_object_or_404(Conversation.objects.for_user(request.user), public_id=public_id)
    services.conversation_delete(conversation=conversation)
    return redirect("chat:conversation_list")
