"""The API tokens page: create (with your password; the token is shown once), list and revoke
your own tokens."""

from django.contrib import messages
from django.contrib.auth.decorators import login_required
from django.shortcuts import get_object_or_404, redirect, render
from django.views.decorators.cache import never_cache
from django.views.decorators.debug import sensitive_post_parameters
from django.views.decorators.http import require_http_methods, require_POST

from accounts import services
from accounts.forms import ApiTokenForm
from accounts.models import ApiToken
from config.errors import AppError


@never_cache  # the page that shows a new token must never be cached anywhere
@sensitive_post_parameters("password")  # never on an error page or in an error report
@login_required
@require_http_methods(["GET", "POST"])
def api_tokens(request):
    created = None
    if request.method == "POST":
        form = ApiTokenForm(request.POST, user=request.user)
        if form.is_valid():
            try:
                # Rendered, not redirected: the secret must not travel through the session or a URL.
                created = services.api_token_create(
                    owner=request.user,
                    name=form.cleaned_data["name"],
                    expires_at=form.expires_at(),
                    never_expires=form.never_expires,
                )
            except AppError as exc:  # at the cap of live tokens
                form.add_error(None, exc.message)
            else:
                form = ApiTokenForm(user=request.user)
    else:
        form = ApiTokenForm(user=request.user)
    tokens = ApiToken.objects.for_user(request.user)
    status = 400 if request.method == "POST" and created is None else 200
    return render(request, "accounts/api_tokens.html", {"form": form, "tokens": tokens, "created": created}, status=status)


@login_required
@require_POST
def api_token_revoke(request, pk: int):
    token = get_object_or_404(ApiToken.objects.for_user(request.user), pk=pk)
    services.api_token_revoke(token=token)
    messages.success(request, f"Revoked “{token.name}” ({token.display_prefix}). Clients using it are refused from now on.")
    return redirect("accounts:api_tokens")
