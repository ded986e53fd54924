# The app image: daphne serving config.asgi on port 8000. Runs behind deploy/nginx.conf.
FROM python:3.11-slim

ENV PYTHONDONTWRITEBYTECODE=1 PYTHONUNBUFFERED=1 PIP_NO_CACHE_DIR=1
# Production mode unless told otherwise: without SECRET_KEY and ALLOWED_HOSTS the app refuses to
# start instead of serving the DEBUG pages and a well-known key (the settings default to
# development for `make run`, not for the image).
ENV DEBUG=0
WORKDIR /app

COPY requirements.txt .
RUN pip install -r requirements.txt

COPY . .
RUN DEBUG=1 python manage.py collectstatic --noinput \
    && useradd --system --uid 1001 app && mkdir -p /app/var && chown -R app /app/var
USER app

EXPOSE 8000
# No --proxy-headers: daphne would take the client's address from the leftmost X-Forwarded-For
# entry, which the client writes. The app resolves it itself (TRUSTED_PROXY_COUNT).
CMD ["daphne", "--bind", "0.0.0.0", "--port", "8000", "config.asgi:application"]
