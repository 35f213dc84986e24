/* The demo program: a binary in a build tree that finds its private library through
   RUNPATH $ORIGIN/../lib, plus libm and libc from the system. */
#include <math.h>
#include <stdio.h>

const char *greeting(void);

int main(int argc, char **argv) {
    (void)argv;
    printf("%s (sqrt(%d) = %.3f)\n", greeting(), argc + 1, sqrt((double)(argc + 1)));
    return 0;
}
