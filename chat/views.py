import uuid

from django.conf import settings
from django.contrib import messages as flash
from django.contrib.auth.decorators import login_required
from django.db.models import Prefetch
from django.http import Http404, HttpResponse, HttpResponseBadRequest, JsonResponse
from django.shortcuts import get_object_or_404, redirect, render
from django.urls import reverse
from django.utils.http import url_has_allowed_host_and_scheme
from django.views.decorators.http import require_GET, require_POST

from agents_app import providers
from agents_app.registry import all_specs, available_specs
from chat import engine, export, services
from chat.conversations import conversation_rename as rename_service
from chat.feedback import feedback_give
from chat.forms import FeedbackForm, NewConversationForm, RenameForm
from chat.models import Conversation, Feedback, Message, Run
from chat.search import BadCursor, conversation_item, conversation_page, search_conversations
from config.errors import AppError
from usage.selectors import conversation_totals, usage_by_conversation


def _provider_problem() -> str:
    try:
        providers.require_provider()
    except providers.ProviderNotConfigured as exc:
        return exc.message
    return ""


@login_required
def conversation_list(request):
    conversations = list(Conversation.objects.for_user(request.user))
    # The same totals as the chat page's footer and admin: summed from the usage ledger.
    totals = usage_by_conversation(conversation.pk for conversation in conversations)
    for conversation in conversations:
        conversation.usage = totals.get(conversation.pk)
    return render(
        request,
        "chat/conversation_list.html",
        {
            "conversations": conversations,
            "form": NewConversationForm(user=request.user),
            "specs": available_specs(request.user),
            "provider_problem": _provider_problem(),
        },
    )


@login_required
@require_POST
def conversation_create(request):
    form = NewConversationForm(request.POST, user=request.user)
    status = 400
    if form.is_valid():
        try:
            conversation = services.conversation_create(
                owner=request.user, agent_key=form.cleaned_data["agent"], model_key=form.cleaned_data["model"] or None
            )
        except AppError as exc:  # e.g. rate_limited: shown on the form, like an invalid choice
            form.add_error("agent", exc.message)
            status = exc.http_status
        else:
            return redirect("chat:conversation_detail", public_id=conversation.public_id)
    return render(
        request,
        "chat/conversation_list.html",
        {"conversations": Conversation.objects.for_user(request.user), "form": form, "specs": available_specs(request.user)},
        status=status,
    )


def _wants_json(request) -> bool:
    """fetch() from the page asks for JSON; a plain form post (no JavaScript) gets a redirect."""
    return "application/json" in request.headers.get("Accept", "")


def _safe_next(request, fallback: str) -> str:
    target = request.POST.get("next") or request.GET.get("next") or ""
    if target and url_has_allowed_host_and_scheme(target, {request.get_host()}, require_https=request.is_secure()):
        return target
    return fallback


def _is_uuid(value: str) -> bool:
    try:
        uuid.UUID(value)
    except ValueError:
        return False
    return True


def _sidebar(request, current: Conversation | None = None) -> dict:
    return {"sidebar_page": conversation_page(user=request.user), "current_id": str(current.public_id) if current else ""}


@login_required
def conversation_detail(request, public_id):
    conversation = get_object_or_404(Conversation.objects.for_user(request.user), public_id=public_id)
    problem = _provider_problem()
    if problem:
        return render(request, "chat/provider_missing.html", {"problem": problem, "conversation": conversation}, status=503)
    # Not `messages`: that name belongs to django.contrib.messages (the flash notices in base.html).
    chat_messages = conversation.messages.prefetch_related(
        Prefetch("feedback", queryset=Feedback.objects.filter(user=request.user), to_attr="own_feedback")
    )
    return render(
        request,
        "chat/conversation_detail.html",
        {
            "conversation": conversation,
            "chat_messages": chat_messages,
            "active_run": Run.objects.active_in(conversation).first(),
            "totals": conversation_totals(conversation.pk),
            "spec": next((s for s in all_specs() if s.key == conversation.agent_key), None),
            "max_chars": settings.CHAT_MAX_MESSAGE_CHARS,
            "comment_chars": Feedback.COMMENT_CHARS,
            **_model_picker(conversation),
            **_sidebar(request, conversation),
        },
    )


def _model_picker(conversation: Conversation) -> dict:
    """The composer's model menu: the models users may pick, and the one the conversation
    runs on (an agent's own model may not be one users can pick: it is shown, not offered)."""
    current = conversation.model_in_use
    models = [{"key": m.key, "label": providers.label_of(m.key)} for m in providers.selectable()]
    return {
        "models": models,
        "model_current": current,
        "model_current_label": providers.label_of(current),
        "model_current_offered": any(m["key"] == current for m in models),
    }


@login_required
@require_GET
def sidebar_page(request):
    """The next page of the sidebar's conversations, as an HTML fragment ("Load more"), or
    (`?conversation=<id>`) the entry of one conversation, for a tab that hears of activity in
    a conversation it does not list yet."""
    current = request.GET.get("current", "")
    only = request.GET.get("conversation", "")
    if only and not _is_uuid(only):
        return HttpResponseBadRequest("No such conversation.")
    try:
        if only:
            page = conversation_item(user=request.user, public_id=only)
        else:
            page = conversation_page(user=request.user, cursor=request.GET.get("cursor", ""))
    except BadCursor:
        return HttpResponseBadRequest("This list changed; reload the page.")
    # The fragment's forms send the user back to the page that asked for it.
    return_to = reverse("chat:conversation_detail", args=[current]) if _is_uuid(current) else reverse("chat:conversation_list")
    return render(
        request, "chat/_sidebar_items.html", {"sidebar_page": page, "current_id": current, "return_to": return_to}
    )


@login_required
@require_GET
def search(request):
    """Search titles and message text: a page of its own, or (`?fragment=1`) the sidebar's list."""
    query = request.GET.get("q", "").strip()
    hits = search_conversations(user=request.user, query=query) if query else []
    context = {"query": query, "hits": hits}
    if request.GET.get("fragment"):
        return render(request, "chat/_search_results.html", context)
    return render(request, "chat/search.html", context)


@login_required
@require_POST
def conversation_rename(request, public_id):
    conversation = get_object_or_404(Conversation.objects.for_user(request.user), public_id=public_id)
    form = RenameForm(request.POST)
    error = ""
    if form.is_valid():
        try:  # the service also tells every open tab of the user (chat.activity)
            rename_service(conversation=conversation, title=form.cleaned_data["title"])
        except AppError as exc:
            error = exc.message
    else:
        error = " ".join(e for errors in form.errors.values() for e in errors)
    if _wants_json(request):
        if error:
            return JsonResponse({"error": error}, status=400)
        return JsonResponse({"conversation": str(conversation.public_id), "title": conversation.title})
    if error:
        flash.error(request, f"Not renamed: {error}")
    detail = reverse("chat:conversation_detail", args=[conversation.public_id])
    return redirect(_safe_next(request, detail))


@login_required
def conversation_delete(request, public_id):
    """POST deletes. A form that asks first (`ask=1`, for browsers without JavaScript, which
    cannot show the confirmation dialog) and GET show a confirmation page instead."""
    conversation = get_object_or_404(Conversation.objects.for_user(request.user), public_id=public_id)
    next_url = _safe_next(request, reverse("chat:conversation_list"))
    if request.method != "POST" or request.POST.get("ask"):
        return render(request, "chat/conversation_confirm_delete.html", {"conversation": conversation, "next": next_url})
    title = str(conversation.title or "New conversation")
    engine.delete_now(conversation=conversation)
    flash.success(request, f"Deleted “{title}”.")
    # Never back to the page of the conversation that was just deleted.
    if next_url.startswith(reverse("chat:conversation_detail", args=[public_id])):
        next_url = reverse("chat:conversation_list")
    return redirect(next_url)


@login_required
@require_GET
def conversation_export(request, public_id, fmt):
    if fmt not in ("md", "json"):
        raise Http404("Export as .md or .json.")
    conversation = get_object_or_404(Conversation.objects.for_user(request.user), public_id=public_id)
    document = export.export_document(
        conversation=conversation, user=request.user, fmt="json" if fmt == "json" else "markdown"
    )
    response = HttpResponse(document.body, content_type=document.content_type)
    response["Content-Disposition"] = f'attachment; filename="{document.filename}"'
    return response


@login_required
@require_POST
def message_feedback(request, public_id):
    message = get_object_or_404(Message.objects.for_user(request.user).select_related("conversation"), public_id=public_id)
    form = FeedbackForm(request.POST)
    error = ""
    feedback = None
    if form.is_valid():
        try:
            feedback = feedback_give(
                user=request.user, message=message, rating=form.cleaned_data["rating"],
                comment=form.cleaned_data["comment"],
            )
        except AppError as exc:
            error = exc.message
    else:
        error = " ".join(e for errors in form.errors.values() for e in errors)
    if _wants_json(request):
        if error:
            return JsonResponse({"error": error}, status=400)
        return JsonResponse({
            "message": str(message.public_id),
            "rating": feedback.rating if feedback else "",
            "comment": feedback.comment if feedback else "",
        })
    if error:
        flash.error(request, f"Feedback not saved: {error}")
    else:
        flash.success(request, "Thanks for your feedback." if feedback else "Feedback removed.")
    detail = reverse("chat:conversation_detail", args=[message.conversation.public_id])
    return redirect(f"{detail}#m-{message.public_id}")
