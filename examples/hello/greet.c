const char *greeting(void) { return "hello from a slim image"; }
