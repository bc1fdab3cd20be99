/* proto: helpers of the coordinator-worker protocol (see proto.h). */
#include "common/proto.h"

#include <stdlib.h>

int proto_launched_by_mpi(void)
{
    return getenv("OMPI_COMM_WORLD_SIZE") || getenv("PMIX_RANK") || getenv("PMI_RANK") ||
           getenv("PMI_SIZE");
}
