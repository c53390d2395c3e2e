"""coap_optim."""
