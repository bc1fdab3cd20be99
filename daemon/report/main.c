/* main: the clipd-report program; everything it does is report_main (cli.c),
 * which the tests and the fuzz harness call without this file. */
#include "daemon/report/report.h"

int main(int argc, char **argv) { return report_main(argc, argv); }
