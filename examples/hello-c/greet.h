#ifndef GREET_H
#define GREET_H
/* Writes a greeting for `who` to stdout. */
void greet(const char *who);
#endif
