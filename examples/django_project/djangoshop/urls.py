from django.urls import include, path

urlpatterns = [
    path("", include("orders.urls")),
    # Where payq's dashboard will appear, for staff users only.
    path("ops/payq/", include("payq.contrib.django.urls")),
]
