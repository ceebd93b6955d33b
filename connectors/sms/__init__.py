"""SMS through Twilio: inbound webhook ``POST /twilio/sms``, outbound through the Messages API."""
