"""sms-cooldown: suppress automated SMS to numbers already texted within a cooldown interval."""
