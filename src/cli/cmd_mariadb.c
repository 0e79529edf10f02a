/* cmd_mariadb.c - placeholder (being written) */
#include "cli.h"
int cmd_mariadb(int argc, char **argv)
{
    (void)argc;
    (void)argv;
    return cli_usage("mariadb: not yet");
}
