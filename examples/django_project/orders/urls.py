from django.urls import path

from orders import views

urlpatterns = [
    path("wallets/<str:user>/topup", views.topup),
    path("wallets/<str:user>", views.wallet_show),
    path("orders", views.order_create),
    path("orders/<int:order_id>", views.order_show),
]
