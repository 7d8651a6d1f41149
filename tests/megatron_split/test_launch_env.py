from megatron_split.runtime import detect_launch_env
from megatron_split.runtime.distributed import first_host


def test_torchrun_variables():
    env = detect_launch_env(
        {
            "RANK": "3",
            "WORLD_SIZE": "4",
            "LOCAL_RANK": "1",
            "MASTER_ADDR": "n1",
            "MASTER_PORT": "1234",
        }
    )
    assert (env.rank, env.world_size, env.local_rank, env.launcher) == (3, 4, 1, "torchrun")
    assert (env.master_addr, env.master_port) == ("n1", 1234)


def test_slurm_tasks_agree_on_a_port_from_the_job_id():
    tasks = [
        detect_launch_env(
            {
                "SLURM_PROCID": str(r),
                "SLURM_NTASKS": "2",
                "SLURM_LOCALID": str(r),
                "SLURM_JOB_ID": "4242",
                "MASTER_ADDR": "node7",
            }
        )
        for r in range(2)
    ]
    assert [t.rank for t in tasks] == [0, 1]
    assert {t.master_port for t in tasks} == {10000 + 4242}
    assert {t.launcher for t in tasks} == {"slurm"}


def test_torchrun_inside_slurm_wins():
    env = detect_launch_env(
        {"RANK": "0", "WORLD_SIZE": "2", "SLURM_PROCID": "5", "SLURM_NTASKS": "8"}
    )
    assert env.launcher == "torchrun" and env.world_size == 2


def test_single_process_gets_a_free_port():
    env = detect_launch_env({})
    assert (env.rank, env.world_size, env.launcher) == (0, 1, "single")
    assert env.master_port > 0


def test_two_nodes_of_eight_gpus_map_to_sixteen_ranks_meeting_on_the_first_node():
    tasks = [
        detect_launch_env({"SLURM_PROCID": str(rank), "SLURM_NTASKS": "16",
                           "SLURM_LOCALID": str(rank % 8), "SLURM_NODEID": str(rank // 8),
                           "SLURM_JOB_ID": "123456", "SLURM_JOB_NODELIST": "gpu[07-08]"})
        for rank in range(16)
    ]  # fmt: skip
    assert [t.rank for t in tasks] == list(range(16))
    assert [t.local_rank for t in tasks] == [*range(8), *range(8)]  # each its node's GPU
    assert {(t.world_size, t.master_addr, t.master_port, t.launcher) for t in tasks} == {
        (16, "gpu07", 10000 + 123456 % 20000, "slurm")
    }


def test_the_first_host_of_a_node_list():
    assert first_host("gpu[07-08,11],cpu3") == "gpu07"
    assert first_host("node12") == first_host("node12,node13") == "node12"
    assert first_host("a[3]") == "a3"
