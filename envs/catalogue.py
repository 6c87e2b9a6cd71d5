"""Every registered environment name, in one place (imports nothing heavy).

A name maps to "module:factory" plus preset keyword arguments; ``envs.make(name, **kw)`` adds the
user's options on top (presets themselves cannot be overridden: use the family's generic name).
"""

from envs.registry import register

# Matrix games (one step).
register("matrix", "envs.matrix:MatrixGame", "generic n-agent one-step matrix game from a payoff table")
register("matrix_tad10", "envs.matrix:named_matrix_game", "TAD-PPO's ten 5x5 matrices, id observed", game="tad10")
register("matrix_qtran", "envs.matrix:named_matrix_game", "QTRAN's 3x3 non-monotonic matrix", game="qtran")
register("markov_matrix", "envs.markov_matrix:MarkovMatrixGame",
         "TAD-DQN's Markov game: TAD-PPO's ten matrices, a uniformly random next matrix each step")
register("markov_matrix_random", "envs.markov_matrix:MarkovMatrixGame",
         "the same with action-dependent random transitions (a fixed seeded table)", transitions="random")
register("matrix_penalty", "envs.matrix:named_matrix_game", "3x3 penalty matrix (TAD-PPO Table 1)", game="penalty")
for _i in range(1, 5):
    register(f"matrix_dpo{_i}", "envs.matrix:named_matrix_game", f"DPO 2x2 game {_i} (App. C)", game=f"dpo{_i}")

# Continuous actions without a physics engine.
register("differential_game", "envs.differential_game:DifferentialGame",
         "two agents, one step, actions in [-10, 10]: max of two quadratics (optimum 10, local optimum 0)")

# DPO's cooperative stochastic game.
register("stochastic_game", "envs.stochastic_game:StochasticGame", "DPO's random cooperative stochastic game")

# Grid worlds.
register("hallway", "envs.hallway:Hallway", "TAD-PPO's two-agent hallway (optimum 5, local optimum 4)")
register("predator_prey", "envs.predator_prey:PredatorPrey", "relative-overgeneralisation predator-prey")
for _tag, _p in (("p0", 0.0), ("p0.5", -0.5), ("p1", -1.0), ("p1.5", -1.5), ("p2", -2.0)):
    register(f"predator_prey_{_tag}", "envs.predator_prey:PredatorPrey",
             f"predator-prey with miscoordination punishment {_p}", punishment=_p)
register("checkers", "envs.checkers:Checkers", "LAN's credit-assignment checkers (apples and lemons)")

# MPE.
register("mpe_simple_spread", "envs.mpe:SimpleSpread", "MPE simple spread (jaxmarl), N=5 by default")
register("mpe_line_control", "envs.mpe:LineControl", "agents spread evenly on a line between two landmarks")
register("mpe_circle_control", "envs.mpe:CircleControl", "agents spread evenly on a circle around a landmark")

# SMAX (jaxmarl's JAX StarCraft stand-in) against the heuristic enemy.
SMAX_MAPS = (
    "3m", "2s3z", "25m", "3s5z", "8m", "5m_vs_6m", "10m_vs_11m", "27m_vs_30m", "3s5z_vs_3s6z",
    "3s_vs_5z", "6h_vs_8z", "smacv2_5_units", "smacv2_10_units", "smacv2_20_units",
)
for _map in SMAX_MAPS:
    register(f"smax_{_map}", "envs.smax:SMAX", f"SMAX {_map} vs the heuristic enemy", map_name=_map)

# Jumanji adapters.
register("lbf", "envs.jumanji:LevelBasedForaging", "jumanji LevelBasedForaging, team reward")
register("rware", "envs.jumanji:RobotWarehouse", "jumanji RobotWarehouse, team reward")

# Multi-agent MuJoCo (Brax physics), the partitions of DPO's Table 1.
register("mamujoco", "envs.mamujoco:MaMuJoCo",
         "multi-agent MuJoCo: a Brax robot's joints split among agents (robot, partition, agent_obsk options)")
for _robot, _partition in (("halfcheetah", "3x2"), ("hopper", "3x1"), ("walker2d", "3x2"), ("ant", "4x2"),
                           ("humanoid", "17x1")):
    register(f"mamujoco_{_robot}_{_partition}", "envs.mamujoco:MaMuJoCo",
             f"multi-agent MuJoCo {_robot} {_partition}, agent_obsk 2 (Brax physics)",
             robot=_robot, partition=_partition)
