/* main.c - placeholder entry point, replaced by the real command. */
#include <stdio.h>
int main(void)
{
    puts("coffer");
    return 0;
}
